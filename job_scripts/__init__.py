"""The Spark and training job scripts, shipped beside the package so an installed wheel carries them."""
