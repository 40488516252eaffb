"""The playground's page."""

from django.urls import path

from access.playground import views

urlpatterns = [path("playground/", views.playground, name="playground")]
