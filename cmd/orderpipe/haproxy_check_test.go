package main

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/orderpipe/orderpipe/ingest"
)

// This file holds the parts of the deploy checker (see checkDeploy) that read
// deploy/haproxy.cfg and the Dockerfile: small line parsers for the few
// directives the compose file depends on, not general parsers.

// haproxyConfig is what the checker needs from haproxy.cfg.
type haproxyConfig struct {
	bindPorts []string // every port a frontend or listen section binds
	backends  []*haproxyBackend
}

// haproxyBackend is a backend or listen section, with what it inherits from
// the defaults section before it.
type haproxyBackend struct {
	name          string
	httpchk       bool   // option httpchk
	checkURI      string // the URI of the HTTP health check
	defaultServer serverOptions
	servers       []haproxyServer
}

type haproxyServer struct {
	name, host, port string
	opts             serverOptions
}

type serverOptions struct {
	check   bool
	maxconn int
}

// apply reads the options of a server or default-server line over o.
func (o serverOptions) apply(args []string) (serverOptions, error) {
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "check":
			o.check = true
		case "no-check":
			o.check = false
		case "maxconn":
			if i+1 == len(args) {
				return o, fmt.Errorf("maxconn needs a value")
			}
			i++
			n, err := strconv.Atoi(args[i])
			if err != nil {
				return o, fmt.Errorf("maxconn %q: %w", args[i], err)
			}
			o.maxconn = n
		}
	}
	return o, nil
}

// envDefault is an HAProxy argument as compose's HAProxy sees it: quotes
// gone and "${NAME-default}" replaced by its default, since compose sets
// none of the ORDERPIPE_LB_* variables that scripts/lb.sh sets to run the
// same file on this machine.
func envDefault(arg string) string {
	arg = strings.Trim(arg, `"`)
	for {
		i := strings.Index(arg, "${")
		if i < 0 {
			return arg
		}
		j := strings.IndexByte(arg[i:], '}')
		if j < 0 {
			return arg
		}
		_, def, _ := strings.Cut(arg[i+2:i+j], "-")
		arg = arg[:i] + def + arg[i+j+1:]
	}
}

// parseHAProxy reads the bind, server, default-server, option httpchk and
// http-check send lines of an HAProxy configuration.
func parseHAProxy(cfg []byte) (haproxyConfig, error) {
	var c haproxyConfig
	var defaults haproxyBackend
	var section string
	var backend *haproxyBackend // the backend or listen section being read
	for n, line := range strings.Split(string(cfg), "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		arg := func(i int) string {
			if i < len(f) {
				return f[i]
			}
			return ""
		}
		switch f[0] {
		case "global", "defaults", "frontend", "backend", "listen", "resolvers", "peers", "userlist", "program", "http-errors", "ring", "cache", "mailers":
			section, backend = f[0], nil
			switch section {
			case "defaults":
				defaults = haproxyBackend{}
				backend = &defaults
			case "backend", "listen":
				b := defaults
				b.name = arg(1)
				backend = &b
				c.backends = append(c.backends, backend)
			}
			continue
		}
		var err error
		switch {
		case f[0] == "bind" && (section == "frontend" || section == "listen"):
			for _, addr := range strings.Split(envDefault(arg(1)), ",") {
				i := strings.LastIndexByte(addr, ':')
				if i < 0 {
					return c, fmt.Errorf("line %d: bind %q: no port", n+1, addr)
				}
				c.bindPorts = append(c.bindPorts, addr[i+1:])
			}
		case backend == nil:
		case f[0] == "server" && backend != &defaults:
			host, port, e := net.SplitHostPort(envDefault(arg(2)))
			if e != nil {
				return c, fmt.Errorf("line %d: server %s: %w", n+1, arg(1), e)
			}
			s := haproxyServer{name: arg(1), host: host, port: port}
			s.opts, err = backend.defaultServer.apply(f[3:])
			backend.servers = append(backend.servers, s)
		case f[0] == "default-server":
			backend.defaultServer, err = backend.defaultServer.apply(f[1:])
		case f[0] == "option" && arg(1) == "httpchk":
			// option httpchk [<method>] [<uri>] [<version>]; the URI defaults to /.
			backend.httpchk, backend.checkURI = true, "/"
			switch args := f[2:]; len(args) {
			case 0:
			case 1:
				backend.checkURI = args[0]
			default:
				backend.checkURI = args[1]
			}
		case f[0] == "http-check" && arg(1) == "send":
			if i := slices.Index(f, "uri"); i > 0 && i+1 < len(f) {
				backend.checkURI = f[i+1]
			}
		}
		if err != nil {
			return c, fmt.Errorf("line %d: %w", n+1, err)
		}
	}
	return c, nil
}

// checkHAProxy checks haproxy.cfg against the service that mounts it and the
// ingest services it balances.
func (c *checker) checkHAProxy(cfg []byte) {
	var lb string
	for _, name := range c.serviceNames() {
		for _, v := range c.file.Services[name].Volumes {
			if strings.HasSuffix(v.Target, "/haproxy.cfg") || strings.TrimSuffix(v.Target, "/") == "/usr/local/etc/haproxy" {
				lb = name
			}
		}
	}
	if lb == "" {
		c.errorf("docker-compose.yml: no service mounts haproxy.cfg")
		return
	}
	hp, err := parseHAProxy(cfg)
	if err != nil {
		c.errorf("service %s: haproxy.cfg: %v", lb, err)
		return
	}
	ports := c.file.Services[lb].Ports
	if len(ports) == 0 {
		c.errorf("service %s: publishes no port, so the edges cannot be reached from the host", lb)
	}
	for _, p := range ports {
		if !slices.Contains(hp.bindPorts, p.Target) {
			c.errorf("service %s: publishes container port %s, but haproxy.cfg binds %v", lb, p.Target, hp.bindPorts)
		}
	}
	balanced := map[string]bool{}
	for _, b := range hp.backends {
		if len(b.servers) == 0 {
			continue
		}
		where := fmt.Sprintf("service %s: haproxy.cfg backend %s", lb, b.name)
		if !b.httpchk || b.checkURI != "/readyz" {
			c.errorf("%s: health check URI %q (option httpchk %v), want /readyz so that an edge that is not ready gets no traffic", where, b.checkURI, b.httpchk)
		}
		for _, s := range b.servers {
			if !s.opts.check {
				c.errorf("%s: server %s is not health-checked (add check to it or to default-server)", where, s.name)
			}
			if s.opts.maxconn == 0 || s.opts.maxconn > ingest.DefaultMaxConnsPerIP {
				c.errorf("%s: server %s has maxconn %d, want 1..%d: every connection comes from the proxy's IP and the edge refuses more than that per IP", where, s.name, s.opts.maxconn, ingest.DefaultMaxConnsPerIP)
			}
			r := c.resolved[s.host]
			if r == nil || r.cmd != "ingest" {
				c.errorf("%s: server %s points at %s, which is not an ingest service", where, s.name, s.host)
				continue
			}
			balanced[s.host] = true
			if _, port, _ := net.SplitHostPort(r.values["listen"]); port != s.port {
				c.errorf("%s: server %s sends to port %s, but service %s listens on %q", where, s.name, s.port, s.host, r.values["listen"])
			}
		}
	}
	for _, name := range c.serviceNames() {
		if r := c.resolved[name]; r != nil && r.cmd == "ingest" && !balanced[name] {
			c.errorf("service %s: no server in haproxy.cfg sends it traffic", name)
		}
	}
}

// dockerEntrypoint returns the binary that the final stage of a Dockerfile
// runs. Its ENTRYPOINT must be the exec form of that one path, so that the
// command of a compose service is the argument list: subcommand first.
func dockerEntrypoint(dockerfile []byte) (string, error) {
	text := strings.ReplaceAll(string(dockerfile), "\\\n", " ")
	var entrypoint string
	for _, line := range strings.Split(text, "\n") {
		instr, args, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			entrypoint = ""
		case "ENTRYPOINT":
			entrypoint = strings.TrimSpace(args)
		}
	}
	if entrypoint == "" {
		return "", fmt.Errorf("the final stage has no ENTRYPOINT, so compose commands would not run orderpipe")
	}
	var argv []string
	if err := json.Unmarshal([]byte(entrypoint), &argv); err != nil || len(argv) != 1 {
		return "", fmt.Errorf("ENTRYPOINT %s: want the exec form of the binary alone, like [\"/orderpipe\"], so that compose commands start with the subcommand", entrypoint)
	}
	return argv[0], nil
}
