"""`hcdtf embed`: the command, registered on the main group by `hcdtf.cli` (as `hcdtf.slide.cli`
is). Imports no TensorFlow until the command runs."""

import click


def commands(friendly, context):
    @click.command("embed", context_settings=context)
    @click.argument("model")
    @click.option("--images", "images_dir", required=True, type=click.Path(),
                  help="Folder of patch images (png, jpg, tif, bmp; any size).")
    @click.option("--out", required=True, type=click.Path(dir_okay=False),
                  help="HDF5 file to write: features float32 [n, d], ids (file stems, sorted).")
    @click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
                  help="Images per forward pass (memory is bounded by one batch).")
    @friendly
    def embed_cmd(model, images_dir, out, batch_size):
        """Embed the patches of a folder with MODEL: an encoder file from `hcdtf weights import`, a
        published encoder name (H-optimus-0, UNI, Virchow2, ...) whose weights are imported, or a
        finished run directory (its classifier's pooled features)."""
        from hcdtf.inference import embed
        from hcdtf import runtime

        runtime.quiet_tensorflow()
        result = embed.embed(model, images_dir, out, batch_size=batch_size, log=click.echo)
        click.echo(f"wrote {result['out']} ({result['n']} x {result['dim']}, "
                   f"{result['images_per_s']:.1f} patches/s)")

    return [embed_cmd]
