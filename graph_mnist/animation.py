"""A run's dashboard frames as a moving picture: an animated GIF (always) and an MP4 (where
ffmpeg is installed), written by --vis=save at the end of a run (dashboard.Files)."""

import shutil
import subprocess


def gif(frames, path, seconds=12):
    """An animated GIF of the frames, the whole run in about `seconds`, last frame held."""
    from PIL import Image
    images = [Image.fromarray(f).quantize(colors=64, method=Image.Quantize.MEDIANCUT)
              for f in frames]
    duration = max(80, int(1000 * seconds / len(images)))
    durations = [duration] * (len(images) - 1) + [3000]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations,
                   loop=0, optimize=True)
    return path


def mp4(frames, path, fps=8):
    """An MP4 of the frames when ffmpeg is installed; None otherwise."""
    ffmpeg = shutil.which('ffmpeg')
    if not ffmpeg:
        return None
    height, width = frames[0].shape[:2]
    command = [ffmpeg, '-y', '-loglevel', 'error', '-f', 'rawvideo', '-pix_fmt', 'rgb24',
               '-s', f'{width}x{height}', '-r', str(fps), '-i', '-', '-pix_fmt', 'yuv420p',
               '-vf', 'pad=ceil(iw/2)*2:ceil(ih/2)*2', path]
    process = subprocess.run(command, input=b''.join(f.tobytes() for f in frames),
                             capture_output=True)
    return path if process.returncode == 0 else None
