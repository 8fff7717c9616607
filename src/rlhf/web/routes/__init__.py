"""One router per resource: API tasks, labels and admin; sign-in; labelling pages; admin pages."""
