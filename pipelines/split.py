"""DVC stage `split`: write the A/B class lists of every split in params `split`."""

from transferability.cli import main

if __name__ == "__main__":
    main(["split"])
