"""The local stack: CEMS on one machine with moto as AWS (`cems local`, `make run`)."""
