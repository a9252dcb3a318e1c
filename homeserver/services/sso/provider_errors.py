"""How talking to an OpenID Connect provider fails, apart from `oidc.py`: the login
flow catches these on every server, while `oidc.py` (authlib, joserfc, cryptography)
is imported only by a server with providers configured."""


class ProviderUnavailable(Exception):
    """The provider could not be reached, or answered with something unusable."""


class LoginRefused(Exception):
    """The provider's answer failed a check; the message says which."""
