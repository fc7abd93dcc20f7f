"""Routes. Trailing slashes are optional so both ``/auth/token`` and ``/auth/token/`` work."""

from __future__ import annotations

from django.contrib.auth.views import LoginView
from django.urls import include, path, re_path
from oauth2_provider.views import IntrospectTokenView, RevokeTokenView, TokenView

from local.upstream import views

urlpatterns = [
    re_path(r"^auth/token/?$", TokenView.as_view(), name="token"),
    re_path(r"^auth/revoke/?$", RevokeTokenView.as_view(), name="revoke"),
    re_path(r"^auth/introspect/?$", IntrospectTokenView.as_view(), name="introspect"),
    re_path(r"^auth/exchange/?$", views.exchange, name="exchange"),
    re_path(r"^auth/userinfo/?$", views.userinfo, name="userinfo"),
    # OpenID Connect (with --oidc): authorize, token, JWKS, discovery, RP-initiated logout under /o/.
    path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")),
    path("accounts/login/", LoginView.as_view(), name="login"),
    re_path(r"^_control/client-secret/?$", views.control_client_secret, name="control-secret"),
    re_path(r"^_control/exchange-token/?$", views.control_exchange_token, name="control-exchange"),
    re_path(r"^_control/stats/?$", views.control_stats, name="control-stats"),
    re_path(r"^_control/reset-stats/?$", views.control_reset_stats, name="control-reset"),
]
