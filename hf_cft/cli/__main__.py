"""``python -m hf_cft.cli <command> ...`` and ``accelerate launch -m hf_cft.cli <command> ...``."""

from hf_cft.cli import main

if __name__ == "__main__":
    main()
