"""toolken's benchmarks, one script per measured claim (installed as `toolken.benchmarks`, so
`toolken bench NAME` runs them from any folder); methods and peers in benchmarks/README.md."""
