"""`python -m jobs.pca`: the DINOv2 picture: PCA of patch tokens as RGB and a foreground mask, per image."""

from __future__ import annotations

import argparse

from jobs._cli import run_job

EPILOG = """examples:
  python -m jobs.pca --images photos/ --out pca_out/                 # the default DINOv2 ViT-S/14 reg4 (hub cache)
  python -m jobs.pca --images photos/ --out pca_out/ --weights dinov2_vits14_reg4_pretrain.pth --resolution 448
  python -m jobs.pca --images photos/ --out pca_out/ --colours foreground   # the paper's second PCA on the foreground
writes OUT/<image path>.png (input | PCA RGB | foreground mask) and OUT/pca.json. One PCA is fitted over the
patches of all the images together (at most --max-images), so the same part gets the same colour in each."""


def main(argv: list[str] | None = None) -> None:
    from pipeline.extract.config import DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="python -m jobs.pca", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, metavar="DIR", help="a folder of images (read recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the PNGs go")
    p.add_argument("--model", default=DEFAULT_MODEL, help="a timm ViT (default: %(default)s)")
    p.add_argument("--weights", default="hub", help="hub | PATH | random (see python -m jobs.extract --help)")
    p.add_argument("--model-kwargs", default=None, help="timm create_model overrides, e.g. depth=2,embed_dim=64")
    p.add_argument("--resolution", type=int, default=None, help="input side in pixels (default: the model's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="foreground: first component above this many standard deviations (default: %(default)s)")
    p.add_argument("--colours", default="all", choices=["all", "foreground"],
                   help="all: components 1-3 of the joint PCA as RGB (default); foreground: a second PCA over "
                        "the foreground patches, background black (DINOv2 paper, Fig. 1)")
    p.add_argument("--max-images", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)

    def job() -> int:
        from pipeline.extract.config import parse_model_kwargs
        from pipeline.report.pca import PcaConfig, run_pca

        record = run_pca(PcaConfig(
            images=args.images, out=args.out, model=args.model, weights=args.weights,
            model_kwargs=parse_model_kwargs(args.model_kwargs), resolution=args.resolution, device=args.device,
            threshold=args.threshold, colours=args.colours, max_images=args.max_images))
        print(f"pca: {len(record['written'])} images, {record['grid'][0]}×{record['grid'][1]} patches each, "
              f"explained variance {record['explained_variance_ratio']}, {len(record['failures'])} skipped "
              f"-> {args.out}")
        return 0

    run_job(job, args.log_level)


if __name__ == "__main__":
    main()
