"""Push: rules and their evaluation, notification counts, /notifications, pushers and
delivery to push gateways."""
