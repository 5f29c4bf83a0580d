import pytest

from cellfactory import create_app
from cellfactory.auth.models import Role
from tests.conftest import login, make_config


def test_login_and_dashboard(client, users):
    response = login(client, "technician.bg")
    assert response.status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    assert "Technician.Bg Tester" in page.get_data(as_text=True)
    assert users["technician"].has_role(Role.TECHNICIAN)


@pytest.mark.parametrize("url", ["http://127.0.0.1:5000", "http://localhost", "https://[::1]:8443/",
                                 "http://127.5.5.5"])
def test_production_refuses_to_start_with_a_loopback_public_url(tmp_path, url):
    from cellfactory import require_production_settings

    app = create_app(make_config("sqlite://", tmp_path, public_url=url).with_overrides(testing=False))
    with pytest.raises(RuntimeError, match="CELLFACTORY_PUBLIC_URL"):
        require_production_settings(app)
    development = create_app(make_config("sqlite://", tmp_path, public_url=url, development=True)
                             .with_overrides(testing=False))
    assert require_production_settings(development) is development


def test_production_sends_hsts_whatever_the_proxy_says(tmp_path):
    from cellfactory import require_production_settings

    app = require_production_settings(create_app(
        make_config("sqlite://", tmp_path, public_url="https://cellfactory.example.org").with_overrides(testing=False)))
    response = app.test_client().get("/healthz")  # plain HTTP, as behind a proxy that does not say https
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
