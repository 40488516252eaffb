"""Pages and API routes of people, departments and personal API tokens."""

from django.urls import include, path
from rest_framework.routers import SimpleRouter

from access.people import api, views

router = SimpleRouter()
router.register("departments", api.DepartmentViewSet, basename="department")
router.register("users", api.UserViewSet, basename="user")
router.register("tokens", api.TokenViewSet, basename="token")

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("login/oidc/<slug:name>/", views.oidc_begin, name="oidc-begin"),
    path("login/oidc/<slug:name>/callback/", views.oidc_callback, name="oidc-callback"),
    path("people/", views.people, name="people"),
    path("people/new/", views.person_new, name="person-new"),
    path("people/<int:pk>/", views.person, name="person"),
    path("people/<int:pk>/deactivate/", views.person_active, {"active": False}, name="person-deactivate"),
    path("people/<int:pk>/reactivate/", views.person_active, {"active": True}, name="person-reactivate"),
    path("people/<int:pk>/reset-password/", views.person_reset_password, name="person-reset-password"),
    path("people/<int:pk>/reset-two-factor/", views.person_reset_two_factor, name="person-reset-two-factor"),
    path("account/two-factor/", views.two_factor, name="two-factor"),
    path("account/two-factor/setup/", views.two_factor_setup, name="two-factor-setup"),
    path("account/set-password/<uidb64>/<token>/", views.SetPasswordView.as_view(), name="set-password"),
    path("people/directory/", views.directory_mappings, name="directory-mappings"),
    path("people/directory/<int:pk>/delete/", views.delete_directory_mapping, name="directory-mapping-delete"),
    path("account/tokens/", views.tokens, name="tokens"),
    path("account/tokens/<int:pk>/revoke/", views.revoke_token, name="token-revoke"),
]

api_urlpatterns = [path("", include(router.urls))]
