# chatsite: `make run` installs and serves the app on its embedded defaults; `make test` installs and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ADDR ?= 127.0.0.1:8000

.PHONY: run test install mutate

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

# runserver warns once of a missing SECRET_KEY; migrate need not say it too.
run: install
	DEBUG=$${DEBUG:-1} $(PY) -W ignore::UserWarning:chatsite.settings manage.py migrate --noinput
	DEBUG=$${DEBUG:-1} $(PY) manage.py runserver $(ADDR)

test: install
	scripts/install-browser
	scripts/install-nginx
	$(PY) -m pytest $(PYTEST_ARGS)

# Mutation run over the billing path (setup.cfg [mutmut], docs/TESTING.md); not part of CI.
mutate: install
	scripts/mutate
