"""Application services (bridges): registrations, namespaces, and the transaction sender."""
