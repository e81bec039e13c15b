"""Writers: virtual datasets made durable (Icechunk, Kerchunk references)."""
