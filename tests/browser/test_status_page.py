"""The status page in headless Chromium: it shows the bundled model with its
signature and batching settings, and scores a record through its form with
the same score as POST /predict/risk."""

import json
import urllib.request
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = [59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]
MODEL = '[data-model="clinical-risk"]'


def predict(base, features):
    body = json.dumps({"subjectId": "S-001", "features": features}).encode()
    request = urllib.request.Request(f"{base}/predict/risk", data=body,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["riskScore"]


def test_page_shows_the_model_and_scores_a_record(inferd, browser):
    wait = WebDriverWait(browser, 15)
    browser.get(inferd + "/")

    # The server and the model, with its signature and batching settings.
    wait.until(lambda b: b.find_element(By.ID, "server-version").text not in ("", "…"))
    card = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, MODEL)))
    assert card.get_attribute("data-version") == "1"
    assert "READY" in card.find_element(By.CSS_SELECTOR, ".model-ready").text
    signature = card.find_element(By.CSS_SELECTOR, "table.signature").text
    assert "features" in signature and "risk_score" in signature and "FP32" in signature
    assert "[batch, 10]" in signature
    batching = card.find_element(By.CSS_SELECTOR, "table.batching").text
    assert "max_batch_size" in batching and "max_queue_delay_microseconds" in batching

    # The form comes prefilled with the example row, labelled from the model card.
    values = [browser.find_element(By.ID, f"f{i}").get_attribute("value") for i in range(10)]
    assert [float(v) for v in values] == EXAMPLE
    assert "body mass index" in browser.find_element(By.ID, "feature-fields").text

    browser.find_element(By.ID, "risk-submit").click()
    shown = wait.until(ready.presence_of_element_located((By.ID, "risk-score")))
    want = predict(inferd, EXAMPLE)
    assert float(shown.get_attribute("data-score")) == want
    assert shown.text == str(want)
    assert abs(want - 0.9028676) < 1e-6

    # The scored requests reach the live numbers on the next poll.
    wait.until(lambda b: int(card.find_element(By.CSS_SELECTOR, ".success b").text) >= 2)
    browser.save_screenshot(str(ROOT / "target" / "status-page.png"))


def test_the_form_shows_the_servers_error(inferd, browser):
    wait = WebDriverWait(browser, 15)
    browser.get(inferd + "/")
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, MODEL)))
    subject = browser.find_element(By.ID, "subject-id")
    subject.clear()
    browser.find_element(By.ID, "risk-submit").click()
    error = wait.until(ready.presence_of_element_located((By.ID, "risk-error")))
    assert "HTTP 400" in error.text and "subjectId must not be empty" in error.text
