module resil.dev/resil

go 1.26.8

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/evanphx/json-patch/v5 v5.9.11
	github.com/hashicorp/go-multierror v1.1.1
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/sys v0.50.0
	sigs.k8s.io/yaml v1.6.0
)

require (
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/hashicorp/errwrap v1.0.0 // indirect
	go.yaml.in/yaml/v2 v2.4.4 // indirect
)
