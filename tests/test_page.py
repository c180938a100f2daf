"""The drawing page of graph_mnist.serve in a real headless Chromium (Debian's chromium
and chromium-driver, installed by scripts/install_test_packages.sh), driven by selenium:
digits drawn with mouse strokes and a finger are read on the page."""

import re

import page_screenshot as page
import pytest
import server_process


@pytest.fixture(scope='module')
def browser_on_page(exported):
    with server_process.Subprocess(exported[1]) as server:
        driver = page.browser()
        try:
            driver.get(server.url + '/')
            yield driver
        finally:
            page.close(driver)


@pytest.mark.parametrize('digit', sorted(page.STROKES))
def test_a_digit_drawn_with_the_mouse_is_read_on_the_page(browser_on_page, digit):
    driver = browser_on_page
    page.clear(driver)
    answered = int(driver.execute_script('return document.body.dataset.answers'))
    page.draw(driver, page.STROKES[digit])
    shown, bars, status = page.answer(driver)
    assert shown == str(digit) and status == ''
    assert len(bars) == 10 and sum(bars) == pytest.approx(100, abs=0.5)
    assert max(bars) == bars[digit]
    # read while drawing: more answers than the one at the end of the stroke
    assert int(driver.execute_script('return document.body.dataset.answers')) > answered + 1
    seen = driver.execute_script(  # the 28x28 the network read is drawn, not empty
        'const d = document.getElementById("seen").getContext("2d")'
        '.getImageData(0, 0, 28, 28).data;'
        'let lit = 0; for (let i = 0; i < d.length; i += 4) lit += d[i] > 128; return lit;')
    assert 15 < seen < 28 * 28 / 2


def test_a_finger_draws_too_and_clear_empties_the_page(browser_on_page):
    driver = browser_on_page
    page.clear(driver)
    page.draw(driver, page.STROKES[1], finger=True)
    assert page.answer(driver)[0] == '1'
    page.clear(driver)
    shown, bars, status = page.answer(driver)
    assert shown == '' and bars == [0] * 10 and 'Draw' in status
    page.draw(driver, [[(30, 30), (31, 31)]])  # a dot in a corner: still a "digit"
    assert page.answer(driver)[0] != ''


def test_the_page_needs_nothing_from_the_internet(browser_on_page):
    html = browser_on_page.page_source
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html)
    assert not re.search(r'@import|url\(', html)
