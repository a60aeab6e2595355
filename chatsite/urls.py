from django.contrib import admin
from django.urls import path

from chat import views

urlpatterns = [
    path("", views.index, name="index"),
    path("c/<int:conversation_id>/", views.index, name="conversation"),
    path("c/<int:conversation_id>/rename/", views.rename, name="rename"),
    path("c/<int:conversation_id>/delete/", views.delete, name="delete"),
    path("admin/", admin.site.urls),
]
