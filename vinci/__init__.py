"""vinci: teach vision-language models to write the code behind an image (VinciCoder)."""
