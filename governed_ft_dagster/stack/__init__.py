"""The embedded local stack: catalog server, Spark jars and MLflow store under one state folder."""
