from cellfactory.auth.models import Role
from tests.conftest import login


def test_login_and_dashboard(client, users):
    response = login(client, "technician.bg")
    assert response.status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    assert "Technician.Bg Tester" in page.get_data(as_text=True)
    assert users["technician"].has_role(Role.TECHNICIAN)
