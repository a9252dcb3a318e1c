"""Mail: sending through the operator's SMTP server, and what the mails say."""
