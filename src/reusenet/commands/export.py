"""`reusenet export`: trained weights as ONNX (checked with onnxruntime) or safetensors + model.json."""
from __future__ import annotations


def add_parser(subparsers) -> None:
    export = subparsers.add_parser("export", help="export trained weights as ONNX or safetensors")
    export.add_argument("source", metavar="MODEL_OR_RUN",
                        help="run folder, model.safetensors or last.pt; or a model name with --checkpoint")
    export.add_argument("--checkpoint", help="weights for a model name (run folder, model.safetensors, last.pt, "
                                             "or a timm state-dict file)")
    export.add_argument("--format", required=True, choices=("onnx", "safetensors"))
    export.add_argument("--output", help="file (onnx) or folder (safetensors); default exports/<model>[.onnx]")
    export.add_argument("--input-size", type=int, help="square input size of the ONNX graph (default: trained size)")
    export.add_argument("--num-classes", type=int, help="classifier size of a timm state-dict --checkpoint")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (17 or newer, default 17)")


def run(args) -> None:
    from ..export import default_output, export_onnx, export_safetensors, load_for_export, timm_kwargs

    model, meta = load_for_export(args.source, args.checkpoint, num_classes=args.num_classes)
    output = args.output or default_output(meta, args.format)
    if args.format == "safetensors":
        weights = export_safetensors(model, meta, output)
        kwargs = timm_kwargs(meta, weights)
        print(f"wrote {weights} and its model.json; load with `reusenet eval {weights}` or "
              f"timm.create_model(**{kwargs!r}) after `import reusenet`")
        return
    channels = meta["input_size"][0]
    size = (channels, args.input_size, args.input_size) if args.input_size else tuple(meta["input_size"])
    result = export_onnx(model, output, size, opset=args.opset)
    print(f"wrote {result.path} (opset {args.opset}, input images N x {'x'.join(map(str, size))}, dynamic N); "
          f"onnxruntime vs PyTorch at batch {', '.join(map(str, result.checked_batches))}: "
          f"max abs diff {result.max_abs_diff:.2e}")
