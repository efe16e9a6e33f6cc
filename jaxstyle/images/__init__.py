"""Images in and out: decoding and encoding files, the network's input space, colours, masks, tiles,
and the finished files."""
