"""DVC stage `prepare`: decode params `data` once into the uint8 cache `data.prepared`."""

from transferability.cli import main

if __name__ == "__main__":
    main(["prepare"])
