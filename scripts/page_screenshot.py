r"""Draws digits on graph_mnist.serve's page in a real headless Chromium; saves a screenshot.

    python scripts/page_screenshot.py --model_base_path=exported/conv_dropout \
        --digit=7 --out=runs/page.png

Starts the server on a free loopback port (stopped at the end), opens its page in
Debian's chromium through selenium and the system's chromedriver, draws the digit with
mouse strokes (press, move, release, as a hand would), waits for the page's answer and
saves the screenshot (--out must not exist). Prints what the page read. The tests drive
the page with the same functions (tests/test_page.py).
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import math
import os
import shutil
import tempfile

from absl import flags

from graph_mnist.errors import UserError

CHROMIUM, CHROMEDRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'

# Strokes on the 280x280 pad, as lists of (x, y) points; one list per press-to-release.
ARC = [(140 + 70 * math.sin(a / 20 * 2 * math.pi), 140 - 95 * math.cos(a / 20 * 2 * math.pi))
       for a in range(21)]
STROKES = {
    0: [ARC],
    1: [[(150, 40), (146, 100), (142, 170), (140, 240)]],
    7: [[(70, 50), (130, 50), (210, 50), (170, 130), (140, 190), (120, 245)]],
}


def browser():
    """Headless Chromium driven by selenium with the system driver (no download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            raise UserError(f'{path} is missing: sh scripts/install_test_packages.sh '
                            f'installs chromium and chromium-driver')
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix='chromium-')
    for argument in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage',
                     '--disable-gpu', '--disable-background-networking',
                     '--disable-component-update', '--disable-sync', '--no-first-run',
                     '--window-size=900,700', f'--user-data-dir={profile}'):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.profile = profile
    return driver


def close(driver):
    driver.quit()
    shutil.rmtree(driver.profile, ignore_errors=True)


def draw(driver, strokes, finger=False):
    """Strokes on the pad with the mouse (or a finger: touch events); each point is
    relative to the pad's top-left corner."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By
    pad = driver.find_element(By.ID, 'pad')
    width, height = pad.size['width'], pad.size['height']
    kind = interaction.POINTER_TOUCH if finger else interaction.POINTER_MOUSE
    for stroke in strokes:  # offsets are from the element's centre
        actions = ActionChains(driver, duration=10,
                               devices=[PointerInput(kind, 'finger' if finger else 'mouse')])
        pointer = actions.w3c_actions.pointer_action
        x, y = stroke[0]
        pointer.move_to(pad, int(x - width / 2), int(y - height / 2)).pointer_down()
        for x, y in stroke[1:]:
            pointer.move_to(pad, int(x - width / 2), int(y - height / 2))
        pointer.pointer_up()
        actions.perform()


def answer(driver, timeout=20):
    """What the page shows once it has answered the latest drawing: (digit text,
    the ten bar heights in %, status text)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(
        'return document.body.dataset.settled === document.body.dataset.version'))
    digit = driver.find_element(By.ID, 'digit').text
    bars = driver.execute_script(
        'return [...document.querySelectorAll(".bar > div")]'
        '.map(b => parseFloat(b.style.height) || 0)')
    return digit, bars, driver.find_element(By.ID, 'status').text


def clear(driver):
    from selenium.webdriver.common.by import By
    driver.find_element(By.ID, 'clear').click()


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string('model_base_path', None, 'Exported versions to serve.')
    flags.DEFINE_enum('digit', '7', [str(d) for d in STROKES], 'The digit to draw.')
    flags.DEFINE_string('out', None, 'The screenshot to write (PNG; must not exist).')
    flags.mark_flags_as_required(['model_base_path', 'out'])


def main(argv):
    del argv
    import server_process
    if os.path.exists(FLAGS.out):
        raise UserError(f'{FLAGS.out} exists; choose another --out')
    with server_process.Subprocess(FLAGS.model_base_path) as server:
        driver = browser()
        try:
            driver.get(server.url + '/')
            draw(driver, STROKES[int(FLAGS.digit)])
            digit, bars, _ = answer(driver)
            os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
            driver.save_screenshot(FLAGS.out)
        finally:
            close(driver)
    print(f'drew a {FLAGS.digit}; the page read {digit} ({max(bars):.1f}%); '
          f'screenshot: {FLAGS.out}')
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
