"""The default bounds on an image we are sent: the one place they are written.

`imaging.ImageLimits` takes its defaults from here, and so should the settings' `server` section (the
operator's values reach `ImageLimits` through `app.image_limits`). A plain-constants module, so that
settings can import it without importing PIL.
"""

from __future__ import annotations

DEFAULT_MAX_PIXELS = 50_000_000  # ~ 8K x 6K: bigger than any line camera, smaller than a bomb
DEFAULT_MAX_RESIZED_PIXELS = 16_000_000  # what a recipe's first resize may make (thin images)
DEFAULT_MAX_JPEG_SCANS = 100  # progressive JPEGs have ~10; each scan is a pass over the whole image
# Custom Vision takes JPEG, PNG, BMP and GIF; WebP is common from cameras. PIL's other decoders (PSD,
# ICO, PCX, ...) are attack surface nobody on a line needs. TIFF may be allowed in settings, but its
# decoder (libtiff) prints its own errors on stderr, one line per broken file: no rate limit can hold it.
DEFAULT_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")
