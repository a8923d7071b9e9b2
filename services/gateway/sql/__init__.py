"""SQL over albums, parsed by sqlglot: the dialect (`dialect`), WHERE clauses and the `where=` text form
as filter trees (`where`), and statements as typed records (`statements`). Running a statement is the
`sql` use case (services.gateway.usecases.sql)."""
