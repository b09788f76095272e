"""In-memory fakes of CEMS's ports, for behaviour tests that need no AWS (moto stays for the adapters)."""
