package main

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// This file is the part of docker-compose.yml that the deploy checker (see
// checkDeploy) reads, as types that yaml.v3 decodes into. yaml.v3 resolves
// anchors, aliases and `<<:` merge keys the way Compose does (see
// TestComposeMergeKeys); the UnmarshalYAML methods accept the short and the
// long syntax of each field.

// deployFiles are the files checkDeploy reads. A nil HAProxy or Dockerfile
// skips the checks that need it.
type deployFiles struct {
	Compose    []byte
	HAProxy    []byte // the haproxy.cfg that the load balancer service mounts
	Dockerfile []byte // the Dockerfile that builds orderpipe:dev
}

// orderpipeImage is the image the compose file builds from the repository.
const orderpipeImage = "orderpipe:dev"

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image       string       `yaml:"image"`
	Build       any          `yaml:"build"`
	Command     argList      `yaml:"command"`
	Environment environment  `yaml:"environment"`
	Ports       []portSpec   `yaml:"ports"`
	Volumes     []volumeSpec `yaml:"volumes"`
	DependsOn   dependencies `yaml:"depends_on"`
	Healthcheck *healthcheck `yaml:"healthcheck"`
	Restart     string       `yaml:"restart"`
	Profiles    []string     `yaml:"profiles"`
	NetworkMode string       `yaml:"network_mode"`
}

// isOrderpipe reports whether the service runs the binary of this repository.
func (s composeService) isOrderpipe() bool {
	switch b := s.Build.(type) {
	case string:
		return b == "."
	case map[string]any:
		return b["context"] == "."
	}
	return s.Image == orderpipeImage
}

// hasHealthcheck reports whether Compose can tell when the service is healthy.
func (s composeService) hasHealthcheck() bool {
	h := s.Healthcheck
	return h != nil && !h.Disable && len(h.Test) > 0 && h.Test[0] != "NONE"
}

// argList is a command: a list, or a string that Compose splits on spaces.
type argList []string

func (a *argList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if strings.ContainsAny(n.Value, `"'\`) {
			return fmt.Errorf("line %d: quoted string command %q: use the list form", n.Line, n.Value)
		}
		*a = strings.Fields(n.Value)
		return nil
	}
	return n.Decode((*[]string)(a))
}

// environment maps a variable to its value; nil means "taken from the shell
// that runs compose".
type environment map[string]*string

func (e *environment) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return n.Decode((*map[string]*string)(e))
	}
	var list []string
	if err := n.Decode(&list); err != nil {
		return err
	}
	*e = environment{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			(*e)[k] = nil
			continue
		}
		(*e)[k] = &v
	}
	return nil
}

// portSpec is one published port, from the short ("127.0.0.1:8080:80") or
// the long syntax.
type portSpec struct {
	HostIP    string `yaml:"host_ip"`
	Published string `yaml:"published"`
	Target    string `yaml:"target"`
}

func (p portSpec) String() string {
	return strings.TrimPrefix(p.HostIP+":"+p.Published+":"+p.Target, ":")
}

func (p *portSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		type plain portSpec
		return n.Decode((*plain)(p))
	}
	s, _, _ := strings.Cut(n.Value, "/") // drop the protocol
	if strings.HasPrefix(s, "[") {
		ip, rest, ok := strings.Cut(s[1:], "]:")
		if !ok {
			return fmt.Errorf("line %d: port %q: bad IPv6 host", n.Line, n.Value)
		}
		p.HostIP, s = ip, rest
	}
	parts := strings.Split(s, ":")
	switch {
	case len(parts) == 3 && p.HostIP == "":
		p.HostIP, p.Published, p.Target = parts[0], parts[1], parts[2]
	case len(parts) == 2:
		p.Published, p.Target = parts[0], parts[1]
	case len(parts) == 1:
		p.Target = parts[0]
	default:
		return fmt.Errorf("line %d: port %q: want [HOST_IP:]HOST_PORT:CONTAINER_PORT", n.Line, n.Value)
	}
	return nil
}

// volumeSpec is one mount, from the short ("./src:/dst:ro") or long syntax.
type volumeSpec struct {
	Source string `yaml:"source"`
	Target string `yaml:"target"`
}

func (v *volumeSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		type plain volumeSpec
		return n.Decode((*plain)(v))
	}
	parts := strings.Split(n.Value, ":")
	if len(parts) == 1 {
		v.Target = parts[0]
		return nil
	}
	v.Source, v.Target = parts[0], parts[1]
	return nil
}

// dependencies is depends_on: a list of services, or a map from service to
// condition.
type dependencies map[string]dependsOn

// dependsOn is one entry of depends_on; the list form means service_started.
type dependsOn struct {
	Condition string `yaml:"condition"`
	Required  *bool  `yaml:"required"`
}

func (d *dependencies) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return n.Decode((*map[string]dependsOn)(d))
	}
	var names []string
	if err := n.Decode(&names); err != nil {
		return err
	}
	*d = dependencies{}
	for _, name := range names {
		(*d)[name] = dependsOn{Condition: "service_started"}
	}
	return nil
}

type healthcheck struct {
	Test    []string
	Disable bool
}

// UnmarshalYAML reads test as Compose does: a string is a CMD-SHELL command.
func (h *healthcheck) UnmarshalYAML(n *yaml.Node) error {
	var raw struct {
		Test    yaml.Node `yaml:"test"`
		Disable bool      `yaml:"disable"`
	}
	if err := n.Decode(&raw); err != nil {
		return err
	}
	h.Disable = raw.Disable
	if raw.Test.Kind == yaml.ScalarNode {
		h.Test = []string{"CMD-SHELL", raw.Test.Value}
		return nil
	}
	return raw.Test.Decode(&h.Test)
}
