// Paint the area to repaint over an uploaded picture. The result is the picture with the painted
// pixels made transparent: LoadImage's `mask` output is 1 - alpha, so painted = 1 = repaint.

import { useEffect, useRef, useState } from "react";

const DISPLAY_MAX = 512;

export function MaskPainter({ src, onSave, onClose, output = "alpha" }: {
  src: string;
  /** "alpha": the picture with the painted area transparent (LoadImage's mask output);
   * "luminance": a black picture, white where painted (a Mask node's image: white = repaint) */
  output?: "alpha" | "luminance";
  onSave(file: File): Promise<void>;
  onClose(): void;
}) {
  const picture = useRef<HTMLCanvasElement>(null);
  const mask = useRef<HTMLCanvasElement>(null);
  const [size, setSize] = useState<{ width: number; height: number } | null>(null);
  const [brush, setBrush] = useState(24);
  const [error, setError] = useState<string | null>(null);
  const painting = useRef(false);

  const loaded = useRef<HTMLImageElement | null>(null);
  useEffect(() => {
    const image = new Image();
    image.onload = () => {
      loaded.current = image;
      setSize({ width: image.naturalWidth, height: image.naturalHeight });
    };
    image.onerror = () => setError("the picture could not be read");
    image.src = src;
  }, [src]);
  useEffect(() => {
    if (size && loaded.current) picture.current?.getContext("2d")?.drawImage(loaded.current, 0, 0);
  }, [size]);

  const paint = (e: React.PointerEvent<HTMLCanvasElement>) => {
    if (!painting.current || !mask.current || !size) return;
    const box = mask.current.getBoundingClientRect();
    const scale = size.width / box.width;
    const context = mask.current.getContext("2d")!;
    context.fillStyle = "rgba(255, 60, 60, 1)";
    context.beginPath();
    context.arc((e.clientX - box.left) * scale, (e.clientY - box.top) * scale, (brush / 2) * scale, 0, Math.PI * 2);
    context.fill();
  };

  const save = async () => {
    if (!picture.current || !mask.current || !size) return;
    const out = document.createElement("canvas");
    out.width = size.width;
    out.height = size.height;
    const context = out.getContext("2d")!;
    context.drawImage(picture.current, 0, 0);
    const pixels = context.getImageData(0, 0, size.width, size.height);
    const painted = mask.current.getContext("2d")!.getImageData(0, 0, size.width, size.height).data;
    for (let i = 0; i < pixels.data.length; i += 4) {
      if (output === "alpha") {
        if (painted[i + 3] > 0) pixels.data[i + 3] = 0;
      } else {
        const value = painted[i + 3] > 0 ? 255 : 0;
        pixels.data.set([value, value, value, 255], i);
      }
    }
    context.putImageData(pixels, 0, 0);
    const blob = await new Promise<Blob | null>((resolve) => out.toBlob(resolve, "image/png"));
    if (!blob) return setError("the browser could not encode the PNG");
    try {
      await onSave(new File([blob], "masked.png", { type: "image/png" }));
      onClose();
    } catch (err) {
      setError((err as Error).message);
    }
  };

  const scale = size ? Math.min(1, DISPLAY_MAX / Math.max(size.width, size.height)) * (size.width < 256 ? 256 / size.width : 1) : 1;
  const style = size ? { width: size.width * scale, height: size.height * scale } : undefined;
  return (
    <div className="modal nowheel nodrag" role="dialog" aria-label="paint mask">
      <div className="modal-body">
        <p>
          {output === "alpha"
            ? "Paint the area to repaint. Saving uploads the picture with that area transparent (LoadImage's mask)."
            : "Paint the area to repaint. Saving uploads a mask picture (white = repaint) and sets the workflow's mask to it."}
        </p>
        <div className="mask-stack" style={style}>
          {size && <canvas ref={picture} width={size.width} height={size.height} style={style} />}
          {size && (
            <canvas
              ref={mask}
              data-testid="mask-canvas"
              className="mask-layer"
              width={size.width}
              height={size.height}
              style={style}
              onPointerDown={(e) => {
                painting.current = true;
                paint(e);
              }}
              onPointerMove={paint}
              onPointerUp={() => (painting.current = false)}
              onPointerLeave={() => (painting.current = false)}
            />
          )}
        </div>
        <div className="row">
          <label>
            brush <input type="range" min={4} max={96} value={brush} onChange={(e) => setBrush(Number(e.target.value))} />
          </label>
          <button onClick={() => mask.current?.getContext("2d")?.clearRect(0, 0, size?.width ?? 0, size?.height ?? 0)}>Clear</button>
          <span className="grow" />
          <button onClick={onClose}>Cancel</button>
          <button className="run" onClick={save} disabled={!size}>
            Save mask
          </button>
        </div>
        {error && <div className="node-error">{error}</div>}
      </div>
    </div>
  );
}
