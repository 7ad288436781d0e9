"""The admin surface as data: every admin resource declared once, with its use cases.

``framework`` (Resource, Operation, Call), ``fields`` (Field, CliSpec, ConsoleSpec), ``models``
(the generated pydantic models) and ``pagination`` (Page, Filter) are the declaration
framework; one module per resource (``directories``, ``trust``, ``crls``, ``users``,
``workspaces``, ``registration_codes``, ``sessions``, ``audit_events``) holds its fields,
operations and use cases; ``registry.RESOURCES`` lists them for the admin API, OpenAPI, the
``broker admin`` commands and the console.
"""
