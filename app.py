"""A page to colour photos in: drop photos, see them gray and coloured side by side, move the decoding sliders,
download the results. Each result is the bytes colorize.py writes for that photo with the same flags (its own
functions, on a copy of the upload in a temporary folder that is removed after); nothing is kept.

    python app.py                                   # the shipped model; open http://127.0.0.1:8000
    python app.py --checkpoint runs/colorizer/best.pt --port 8080

The page talks to this process alone (it listens on this machine only, unless --host says otherwise); a file it
cannot colour is named on the page with the reason, one line.
"""
import argparse
import json
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

import colorize
from common import chroma_gain, temperature
from guards import (ArgumentParser, UserError, add_device_argument, bfloat16_autocast, escape_bytes, exit_on_user_error,
                    port, resolve_device)
from photos import MAX_FILE_BYTES, BadImage, lab_to_samples, read_lightness

PAGE = Path(__file__).resolve().parent / "app.html"
TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp",
         ".tif": "image/tiff", ".tiff": "image/tiff"}


def parse_args(argv=None):
    p = ArgumentParser(__doc__)
    p.add_argument("--checkpoint", type=Path, default=colorize.SHIPPED_MODEL,
                   help="a colorizer checkpoint; default: the model shipped in models/")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0: every machine that reaches "
                                                       "this one may use the page")
    p.add_argument("--port", type=port, default=8000, help="port to listen on; 0: any free one (printed)")
    add_device_argument(p)
    p.add_argument("--amp", action="store_true",
                   help="the network in bfloat16 where the device has it, as colorize.py's")
    return p.parse_args(argv)


class Studio:
    """The loaded colorizer and what the page may ask of it: one photo at a time through colorize.py's path."""

    def __init__(self, args):
        device = resolve_device(args.device)
        self.colorizer = colorize.Colorizer.from_checkpoint(args.checkpoint, None, None, device,
                                                            bfloat16_autocast(device.type, args.amp, "colorizing"))
        self.checkpoint = args.checkpoint
        self.classify = self.colorizer.config.get("head") == "classify"
        self.decoding = {"temperature": getattr(self.colorizer.model, "temperature", None),
                         "chroma_gain": getattr(self.colorizer.model, "chroma_gain", None)}
        self.face_scale = self.colorizer.face_scale
        self.turn = threading.Lock()  # the model's decoding settings are the model's: one request at a time

    def info(self) -> dict:
        return {"checkpoint": self.checkpoint.name, "classify": self.classify, **self.decoding,
                "faces": self.face_scale is not None, "max_bytes": MAX_FILE_BYTES}

    def colour(self, name: str, data: bytes, query: dict) -> tuple[bytes, str, str]:
        """(the output's bytes, its file name, its media type) for an uploaded file: colorize.py's output for
        it with the flags in query (temperature, chroma_gain, faces=auto|off), or its gray (view=gray, PNG)."""
        name = Path(name).name or "photo.png"
        decoding = {key: kind(query[key]) for key, kind in (("temperature", temperature),
                                                             ("chroma_gain", chroma_gain)) if key in query}
        if decoding and not self.classify:
            raise BadImage("the decoding sliders apply to classification checkpoints only", "leave them as they are")
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "in" / name
            source.parent.mkdir()
            source.write_bytes(data)
            if query.get("view") == "gray":  # what the network sees: its lightness, nothing asked of the model
                lightness = read_lightness(source, colorize.WORKING_BYTES_PER_PIXEL).L
                ok, png = cv2.imencode(".png", lab_to_samples(lightness, None, bgr=True))
                return png.tobytes(), f"{Path(name).stem}_gray.png", "image/png"
            suffix = source.suffix.lower() if source.suffix.lower() in colorize.WRITTEN_SUFFIXES else ".png"
            target = Path(tmp) / "out" / f"{Path(name).stem}{suffix}"
            with self.turn:
                for key, value in {**self.decoding, **decoding}.items():
                    setattr(self.colorizer.model, key, value)
                self.colorizer.face_scale = self.face_scale if query.get("faces", "auto") == "auto" else None
                colorize.colour_one(source, self.colorizer, target)
            return target.read_bytes(), target.name, TYPES.get(suffix, "application/octet-stream")


def handler(studio: Studio):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/":
                self.send(200, PAGE.read_bytes(), "text/html; charset=utf-8")
            elif self.path == "/info":
                self.send(200, json.dumps(studio.info()).encode(), "application/json")
            else:
                self.send(404, b"not found", "text/plain")

        def do_POST(self):
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            name = query.get("name", "photo")
            try:
                if url.path != "/colorize":
                    raise BadImage("no such action", "reload the page")
                size = int(self.headers.get("Content-Length") or 0)
                if size > MAX_FILE_BYTES:
                    raise BadImage(f"too large to read ({size / 1e9:.1f} GB)", "scale it down first")
                data, output, kind = studio.colour(name, self.rfile.read(size), query)
            except (BadImage, UserError, argparse.ArgumentTypeError, OSError, ValueError) as exc:
                self.send(400, json.dumps({"error": f"{escape_bytes(name)}: {escape_bytes(exc)}"}).encode(),
                          "application/json")
            except Exception as exc:  # a page shows one line, never a traceback
                self.send(500, json.dumps({"error": f"{escape_bytes(name)}: not coloured ({type(exc).__name__}: "
                                                    f"{escape_bytes(exc).splitlines()[0][:200]})"}).encode(),
                          "application/json")
            else:
                self.send(200, data, kind, {"Content-Disposition": f"attachment; filename*=UTF-8''"
                                                                   f"{urllib.parse.quote(output)}"})

        def send(self, status: int, body: bytes, kind: str, headers=None):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # one line per request on the terminal would drown the address
            pass

    return Handler


def main():
    args = parse_args()
    studio = Studio(args)
    try:
        server = ThreadingHTTPServer((args.host, args.port), handler(studio))
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}): pass another --port") from None
    host, port = server.server_address[:2]
    print(f"colour photos at http://{host}:{port} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    exit_on_user_error(main)
