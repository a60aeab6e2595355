from django.contrib import admin
from django.urls import path

from billing.views import dashboard_view, my_usage
from chat import views

urlpatterns = [
    path("", views.index, name="index"),
    path("session/", views.session, name="session"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.logout, name="logout"),
    path("signup/", views.signup, name="signup"),
    path("c/<int:conversation_id>/", views.index, name="conversation"),
    path("c/<int:conversation_id>/rename/", views.rename, name="rename"),
    path("c/<int:conversation_id>/delete/", views.delete, name="delete"),
    path("usage/", my_usage, name="my_usage"),
    path("admin/billing/dashboard/", admin.site.admin_view(dashboard_view), name="billing_dashboard"),
    path("admin/", admin.site.urls),
]
