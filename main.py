"""vinci's command line (the same as the `vinci` console script); see vinci/cli.py.

    python main.py fit --config configs/sft.yaml
    python main.py fit --config configs/virl.yaml --sampler.temperature 0.8   # override any key
    python main.py fit --config configs/sft.yaml --print_config               # the full resolved config
    python main.py export --adapter runs/virl/adapter --out runs/virl/merged
"""

from vinci.cli import cli_main, main  # noqa: F401  (tests call cli_main)

if __name__ == "__main__":
    main()
