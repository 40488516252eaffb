"""The model registry: registered model directories, their files, checksums and variants."""
