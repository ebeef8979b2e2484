"""`python -m landscape ...`: the `landscape` command (also under `torchrun -m landscape compute ...`)."""

from .cli import main

if __name__ == "__main__":
    main()
