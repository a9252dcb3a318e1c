"""Third-party ids: email addresses on accounts and the mails that prove them."""
