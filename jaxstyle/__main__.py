"""`python -m jaxstyle` runs the CLI."""
from jaxstyle.faces.cli import main

if __name__ == "__main__":
    main()
