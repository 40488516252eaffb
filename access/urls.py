"""Pages and API routes of people, model access, the playground and usage: each domain's own."""

from access.grants import urls as grants
from access.people import urls as people
from access.playground import urls as playground
from access.usage import urls as usage

urlpatterns = [*people.urlpatterns, *grants.urlpatterns, *playground.urlpatterns, *usage.urlpatterns]
api_urlpatterns = [*people.api_urlpatterns, *grants.api_urlpatterns, *usage.api_urlpatterns]
