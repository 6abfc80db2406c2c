# The image tier (issue 26): build the Dockerfile and run the image the way the gateway's
# Deployment does (tests/image), so the artifact that ships is the one tested. Docker from
# Debian (docker.io) when missing; dockerd started in the background when not running (no
# systemd here); the pinned base or, when no registry has it, a debootstrap substitute
# (mk/image-base.sh says so loudly; docker keeps it, so later runs skip the ~3 min).
DOCKERD_LOG ?= /var/log/synapse-dockerd.log
DOCKERD_WAIT ?= 60
IMAGE_TEST_TAG ?= synapse:image-test

.PHONY: docker-tools docker-engine test-image

docker-tools: ## install docker.io and debootstrap from Debian when missing
	@$(call apt_install,dockerd debootstrap,docker.io debootstrap)

# dockerd in its own session, so it outlives make; its log in $(DOCKERD_LOG).
docker-engine: docker-tools ## start dockerd in the background unless it runs (waits $(DOCKERD_WAIT) s)
	@docker info >/dev/null 2>&1 || { \
	  echo "==> starting dockerd in the background (log $(DOCKERD_LOG))"; \
	  $(SUDO) setsid sh -c 'exec dockerd >>$(DOCKERD_LOG) 2>&1' </dev/null & \
	  for i in $$(seq $(DOCKERD_WAIT)); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
	  docker info >/dev/null 2>&1 || { tail -n 20 $(DOCKERD_LOG); \
	    echo "dockerd did not answer within $(DOCKERD_WAIT) s (log $(DOCKERD_LOG))" >&2; exit 1; }; }

# The Dockerfile as written, but FROM the base mk/image-base.sh chose (the pinned one when it
# can be had); the legacy builder: Debian's docker.io has no buildx. --network host: the build's
# pip reaches the registry as this machine does.
test-image: $(STAMP) docker-engine ## image tier: build the Dockerfile, run it as the Deployment does
	@base=$$(bash mk/image-base.sh Dockerfile | tail -n 1) && \
	dockerfile=$$(mktemp) && trap 'rm -f "$$dockerfile"' EXIT && \
	sed "s|^FROM [^ ]*|FROM $$base|" Dockerfile >"$$dockerfile" && \
	echo "==> docker build -t $(IMAGE_TEST_TAG) (the Dockerfile on $$base)" && \
	DOCKER_BUILDKIT=0 docker build --network host -f "$$dockerfile" -t $(IMAGE_TEST_TAG) . && \
	SYNAPSE_IMAGE_TESTS=1 SYNAPSE_IMAGE_BASE=$$base SYNAPSE_IMAGE_TAG=$(IMAGE_TEST_TAG) \
	  $(BIN)/pytest tests/image $(PYTEST_ARGS)
