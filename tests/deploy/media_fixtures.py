"""Test helpers for live and video inputs: a loopback MJPEG stream and a video's decodable frame count
(shared by test_live.py, test_sources.py and the recorded-output script frame_outputs.py)."""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

SERVE_SECONDS = 20.0  # a stream never outlives this


class MjpegServer:
    """Serves `images` as JPEG frames in multipart/x-mixed-replace (what IP cameras send) on 127.0.0.1,
    `delay` seconds apart, then closes; `on_frame(i)` is called after frame i is sent."""

    def __init__(self, images: Sequence[np.ndarray], delay: float = 0.0,
                 on_frame: Optional[Callable[[int], None]] = None):
        jpegs = [cv2.imencode(".jpg", image)[1].tobytes() for image in images]
        served = self.served = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                start = time.monotonic()
                try:
                    for i, data in enumerate(jpegs):
                        if time.monotonic() - start > SERVE_SECONDS:
                            break
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(data) + data + b"\r\n")
                        self.wfile.flush()
                        served.append(i)
                        if on_frame:
                            on_frame(i)
                        time.sleep(delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/thermal.mjpg"

    def __enter__(self) -> "MjpegServer":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def video_frame_count(path) -> int:
    """How many frames OpenCV decodes from the video at `path`."""
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n
