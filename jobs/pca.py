"""`python -m jobs.pca`: the DINOv2 picture: PCA of patch tokens as RGB and a foreground mask, per image."""

from __future__ import annotations

import argparse

from jobs._args import add_model_args, add_running_args, config_from, option
from jobs._cli import run_command

EPILOG = """examples:
  python -m jobs.pca --images photos/ --out pca_out/                 # the default DINOv2 ViT-S/14 reg4 (hub cache)
  python -m jobs.pca --images photos/ --out pca_out/ --weights dinov2_vits14_reg4_pretrain.pth --resolution 448
  python -m jobs.pca --images photos/ --out pca_out/ --colours foreground   # the paper's second PCA on the foreground
writes OUT/<image path>.png (input | PCA RGB | foreground mask) and OUT/pca.json. One PCA is fitted over the
patches of all the images together (at most --max-images), so the same part gets the same colour in each."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pipeline.report.config import PcaConfig

    p.add_argument("--images", required=True, metavar="DIR", help="a folder of images (read recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the PNGs go")
    add_model_args(p, PcaConfig, resolution="input side in pixels (default: the model's)")
    pca = p.add_argument_group("picture")
    option(pca, PcaConfig, "threshold", "foreground: first component above this many standard deviations "
                                        "(default: %(default)s)")
    option(pca, PcaConfig, "colours", "all: components 1-3 of the joint PCA as RGB; foreground: a second PCA "
                                      "over the foreground patches, background black (DINOv2 paper, Fig. 1) "
                                      "(default: %(default)s)", choices=["all", "foreground"])
    option(pca, PcaConfig, "max_images", "images in the joint PCA at most (default: %(default)s)")
    add_running_args(p, PcaConfig)


def run(args: argparse.Namespace) -> int:
    from pipeline.report.config import PcaConfig
    from pipeline.report.pca import run_pca

    done = run_pca(config_from(PcaConfig, args))
    print(f"pca: {len(done.written)} images, {done.grid[0]}×{done.grid[1]} patches each, "
          f"explained variance {done.explained_variance_ratio}, {len(done.failures)} skipped -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> None:
    run_command(__spec__.name, argv)


if __name__ == "__main__":
    main()
