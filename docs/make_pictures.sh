#!/usr/bin/env bash
# Makes every picture in the README, with the commands the README shows (run from the repo root,
# with ../shared/ beside it). Each run prints its timings; about 12 minutes on 2 CPU cores.
set -euo pipefail
I=../shared/images
W="--weights ../shared/weights/vgg16_imagenet_notop.h5 --quality 85"
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg -o docs/transfer.jpg --size 256 $W
jaxstyle content $I/tubingen.jpg -o docs/content.jpg --size 256 $W
jaxstyle style $I/starry_night.jpg -o docs/style.jpg --size 256 $W
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg $I/the_scream.jpg --style-blend 0.5,0.5 -o docs/blend.jpg --size 256 $W
jaxstyle transfer $I/tubingen.jpg $I/the_scream.jpg --preserve-colors luminance -o docs/colors_luminance.jpg --size 256 $W
jaxstyle transfer $I/tubingen.jpg $I/the_scream.jpg --preserve-colors covariance -o docs/colors_covariance.jpg --size 256 $W
jaxstyle transfer $I/tubingen.jpg $I/the_scream.jpg -o docs/colors_none.jpg --size 256 $W
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg --style-scale 0.5 -o docs/style_scale_0.5.jpg --size 256 $W
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg --style-scale 2 -o docs/style_scale_2.jpg --size 256 $W
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg --tv-weight 0.01 -o docs/tv_0.01.jpg --size 256 $W
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg --init noise -o docs/init_noise.jpg --size 256 $W
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg --optimizer adam --learning-rate 5 -o docs/adam.jpg --size 256 $W
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg --preset writeup -o docs/preset_writeup.jpg --size 256 $W
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg --preset gatys -o docs/preset_gatys.jpg --size 256 $W
jaxstyle transfer $I/golden_gate.jpg $I/starry_night.jpg --scales 2 --scale-iterations 200,100 -o docs/multiscale_512.jpg --size 512 $W
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg --iterations 150 --save-every 10 --gif docs/transfer.gif -o /tmp/jaxstyle_gif_result.png --size 160 $W --trace docs/transfer_trace.json
rm -f /tmp/jaxstyle_gif_result*.png
# 2048 px, coarse to fine (about 10 minutes on 2 CPU cores); the README shows it reduced and a crop.
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg --scales 3 --scale-iterations 150,40,12 --size 2048 -o /tmp/jaxstyle_2048.jpg $W
python3 -c "
from PIL import Image
im = Image.open('/tmp/jaxstyle_2048.jpg')
im.resize((768, 576), Image.LANCZOS).save('docs/multiscale_2048.jpg', quality=88)
im.crop((1000, 500, 1512, 884)).save('docs/multiscale_2048_crop.jpg', quality=90)"
rm -f /tmp/jaxstyle_2048.jpg
# guided transfer: the sky (black in the mask) in one painting, the rest in another or kept
python3 docs/make_sky_mask.py $I/tubingen.jpg docs/tubingen_sky_mask.png
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg $I/the_scream.jpg --content-mask docs/tubingen_sky_mask.png -o /tmp/jaxstyle_guided.jpg --size 384 $W
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg keep --content-mask docs/tubingen_sky_mask.png -o /tmp/jaxstyle_keep.jpg --size 384 $W
python3 -c "
from PIL import Image
m = Image.open('docs/tubingen_sky_mask.png').convert('RGB').resize((384, 288), Image.NEAREST)
out = Image.new('RGB', (384 * 3 + 16, 288), 'white')
for x, im in ((0, m), (392, Image.open('/tmp/jaxstyle_guided.jpg')), (784, Image.open('/tmp/jaxstyle_keep.jpg'))):
    out.paste(im, (x, 0))
out.save('docs/guided.jpg', quality=88)"
# 4096 px with a tiled full-resolution stage (about 23 minutes on 2 CPU cores)
jaxstyle transfer $I/tubingen.jpg $I/starry_night.jpg --size 4096 --scales 4 --scale-iterations 150,40,10,5 --tile 1024 -o /tmp/jaxstyle_4096.jpg $W
python3 -c "
from PIL import Image
im = Image.open('/tmp/jaxstyle_4096.jpg')
im.resize((768, 576), Image.LANCZOS).save('docs/tiled_4096.jpg', quality=88)
im.crop((1400, 1250, 1912, 1634)).save('docs/tiled_4096_crop.jpg', quality=92)"
