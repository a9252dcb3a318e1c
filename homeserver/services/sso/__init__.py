"""Single sign-on: OpenID Connect providers, the accounts they reach, and the
pages in between."""
