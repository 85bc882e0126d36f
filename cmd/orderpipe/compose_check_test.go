package main

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/orderpipe/orderpipe/topology"
	"gopkg.in/yaml.v3"
)

// This file is a checker for docker-compose.yml, deploy/haproxy.cfg and the
// Dockerfile against the flags of the binary: it returns every mismatch as an
// error that starts with the service (or file) it is about.

// checkDeploy returns every mismatch between the deploy files and the
// binary's flags; none means the files agree with each other and with it.
func checkDeploy(files deployFiles) []error {
	var f composeFile
	if err := yaml.Unmarshal(files.Compose, &f); err != nil {
		return []error{fmt.Errorf("docker-compose.yml: %w", err)}
	}
	if len(f.Services) == 0 {
		return []error{errors.New("docker-compose.yml: no services")}
	}
	c := &checker{file: f, resolved: map[string]*resolvedService{}}
	binary := "/orderpipe"
	if files.Dockerfile != nil {
		b, err := dockerEntrypoint(files.Dockerfile)
		if err != nil {
			c.errorf("Dockerfile: %v", err)
		} else {
			binary = b
		}
	}
	names := c.serviceNames()
	for _, name := range names {
		c.checkService(name)
	}
	for _, name := range names {
		if r := c.resolved[name]; r != nil {
			c.checkRequired(name, r, binary)
		}
	}
	c.checkTopologyAgrees(names)
	if files.HAProxy != nil {
		c.checkHAProxy(files.HAProxy)
	}
	return c.errs
}

// checker collects the errors of one checkDeploy run, in file order of the
// sorted service names.
type checker struct {
	file     composeFile
	resolved map[string]*resolvedService // orderpipe services whose command parsed
	errs     []error
}

// resolvedService is an orderpipe service with the value of every flag as
// the binary would see it: command line, then environment, then default.
type resolvedService struct {
	cmd    string
	values map[string]string
	set    map[string]bool // given on the command line or in the environment
}

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func (c *checker) serviceNames() []string {
	return slices.Sorted(maps.Keys(c.file.Services))
}

func (c *checker) checkService(name string) {
	s := c.file.Services[name]
	if s.NetworkMode == "host" {
		c.errorf("service %s: network_mode host exposes every port beyond loopback", name)
	}
	for _, p := range s.Ports {
		if ip := net.ParseIP(p.HostIP); ip == nil || !ip.IsLoopback() {
			c.errorf("service %s: port %q is published on host IP %q, want 127.0.0.1 (nothing beyond loopback by default)", name, p, p.HostIP)
		}
	}
	for _, dep := range slices.Sorted(maps.Keys(s.DependsOn)) {
		c.checkDependency(name, s, dep, s.DependsOn[dep])
	}
	if s.isOrderpipe() {
		c.checkCommand(name, s)
	}
}

func (c *checker) checkDependency(name string, s composeService, dep string, d dependsOn) {
	target, ok := c.file.Services[dep]
	if !ok {
		c.errorf("service %s: depends_on %s, which is not a service", name, dep)
		return
	}
	switch d.Condition {
	case "", "service_started":
	case "service_healthy":
		if !target.hasHealthcheck() {
			c.errorf("service %s: waits for %s to be service_healthy, but %s has no healthcheck", name, dep, dep)
		}
	case "service_completed_successfully":
		if target.Restart != "no" {
			c.errorf("service %s: waits for %s to complete, but %s is not a one-shot job (restart %q, want \"no\")", name, dep, dep, target.Restart)
		}
	default:
		c.errorf("service %s: depends_on %s: unknown condition %q", name, dep, d.Condition)
	}
	if len(s.Profiles) == 0 && len(target.Profiles) > 0 && (d.Required == nil || *d.Required) {
		c.errorf("service %s: depends on %s, which only runs with profiles %v", name, dep, target.Profiles)
	}
}

// checkCommand checks the command and the ORDERPIPE_* environment of an
// orderpipe service against its subcommand's flag set, and records the
// resolved flag values.
func (c *checker) checkCommand(name string, s composeService) {
	if len(s.Command) == 0 {
		c.errorf("service %s: runs %s without a command: want a subcommand first", name, orderpipeImage)
		return
	}
	cmd, args := s.Command[0], s.Command[1:]
	fs, err := flagsFor(cmd)
	if err != nil {
		c.errorf("service %s: command %q: %v", name, s.Command, err)
		return
	}
	r := &resolvedService{cmd: cmd, values: map[string]string{}, set: map[string]bool{}}
	fs.VisitAll(func(f *flag.Flag) { r.values[f.Name] = f.DefValue })
	fromCommand := map[string]bool{}
	for i := 0; i < len(args); i++ {
		tok := args[i]
		if tok == "--" || !strings.HasPrefix(tok, "-") || tok == "-" {
			if cmd == "keys" && i == 0 && tok == "new" || cmd == "probe" && len(args) == 1 {
				continue
			}
			c.errorf("service %s: unexpected argument %q: orderpipe %s takes flags only", name, tok, cmd)
			continue
		}
		flagName, value, hasValue := strings.Cut(strings.TrimLeft(tok, "-"), "=")
		f := fs.Lookup(flagName)
		if f == nil {
			c.errorf("service %s: orderpipe %s has no flag --%s", name, cmd, flagName)
			if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++ // most likely its value: one error is enough
			}
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			if !hasValue {
				value = "true"
				if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
					c.errorf("service %s: --%s is a boolean flag and takes no separate value (%q): write --%s=%s", name, flagName, args[i+1], flagName, args[i+1])
					i++
					continue
				}
			}
		} else if !hasValue {
			if i+1 == len(args) {
				c.errorf("service %s: --%s needs a value", name, flagName)
				continue
			}
			i++
			value = args[i]
		}
		c.setFlag(name, fs, r, flagName, value, "--"+flagName)
		fromCommand[flagName] = true
	}
	byEnv := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		for _, env := range append([]string{envName(f.Name)}, aliases[f.Name]...) {
			byEnv[env] = true
		}
	})
	for _, env := range slices.Sorted(maps.Keys(s.Environment)) {
		if (strings.HasPrefix(env, "ORDERPIPE_") || env == "DATABASE_URL") && !byEnv[env] {
			c.errorf("service %s: environment %s matches no flag of orderpipe %s", name, env, cmd)
		}
	}
	// As parse does: the command line wins, then the first non-empty variable.
	fs.VisitAll(func(f *flag.Flag) {
		if fromCommand[f.Name] {
			return
		}
		for _, env := range append([]string{envName(f.Name)}, aliases[f.Name]...) {
			if v := s.Environment[env]; v != nil && *v != "" {
				c.setFlag(name, fs, r, f.Name, *v, "environment "+env)
				return
			}
		}
	})
	c.resolved[name] = r
}

// setFlag interpolates value as Compose would with no variables set, and
// parses it with the flag's own parser.
func (c *checker) setFlag(name string, fs *flag.FlagSet, r *resolvedService, flagName, value, where string) {
	v, err := interpolate(value)
	if err == nil {
		err = fs.Set(flagName, v)
	}
	if err != nil {
		c.errorf("service %s: %s %q: %v", name, where, value, err)
		return
	}
	r.values[flagName], r.set[flagName] = v, true
}

// interpolate substitutes ${VAR:-default} and ${VAR-default} with their
// defaults and $$ with $, which is what Compose does when none of the
// variables is set: the files must work without any.
func interpolate(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			b.WriteByte(s[i])
			continue
		}
		rest := s[i+1:]
		switch {
		case strings.HasPrefix(rest, "$"):
			b.WriteByte('$')
			i++
		case strings.HasPrefix(rest, "{"):
			expr, _, ok := strings.Cut(rest[1:], "}")
			if !ok {
				return "", fmt.Errorf("unterminated ${ in %q", s)
			}
			name, def, ok := strings.Cut(expr, "-")
			name = strings.TrimSuffix(name, ":")
			if !ok || strings.Contains(def, "$") || !isVarName(name) {
				return "", fmt.Errorf("${%s}: want ${VAR:-default}, so that it works with nothing set", expr)
			}
			b.WriteString(def)
			i += len(expr) + 2
		default:
			return "", fmt.Errorf("%q: write ${VAR:-default}, so that it works with nothing set", s)
		}
	}
	return b.String(), nil
}

func isVarName(s string) bool {
	for i, r := range s {
		if r != '_' && (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}
	return s != ""
}

// checkRequired checks what each subcommand needs to work in a container.
func (c *checker) checkRequired(name string, r *resolvedService, binary string) {
	s := c.file.Services[name]
	switch r.cmd {
	case "topics", "ingest", "process", "sink":
		if r.values["brokers"] == "" {
			c.errorf("service %s: orderpipe %s needs --brokers (or ORDERPIPE_BROKERS)", name, r.cmd)
		}
		for _, b := range strings.Split(r.values["brokers"], ",") {
			if host, _, err := net.SplitHostPort(b); b != "" && (err != nil || !c.isService(host)) {
				c.errorf("service %s: broker %q is not HOST:PORT of a service of this file", name, b)
			}
		}
	}
	switch r.cmd {
	case "sink", "migrate":
		u, err := url.Parse(r.values["postgres-url"])
		switch {
		case r.values["postgres-url"] == "":
			c.errorf("service %s: orderpipe %s needs --postgres-url (or ORDERPIPE_POSTGRES_URL / DATABASE_URL)", name, r.cmd)
		case err != nil || !c.isService(u.Hostname()):
			c.errorf("service %s: postgres URL host is not a service of this file", name)
		}
	}
	if r.cmd != "ingest" {
		return
	}
	listen := r.values["listen"]
	host, port, err := net.SplitHostPort(listen)
	if err != nil || (host != "0.0.0.0" && host != "" && host != "::") {
		c.errorf("service %s: --listen %q: want 0.0.0.0:PORT, or nothing outside the container reaches the edge", name, listen)
		return
	}
	keys := r.values["api-keys-file"]
	switch {
	case keys == "":
		c.errorf("service %s: listens on %s without --api-keys-file (or ORDERPIPE_API_KEYS_FILE): the edge refuses a non-loopback address without keys", name, listen)
	case !slices.ContainsFunc(s.Volumes, func(v volumeSpec) bool {
		return v.Target != "" && strings.HasPrefix(keys, strings.TrimSuffix(v.Target, "/")+"/")
	}):
		c.errorf("service %s: API keys file %s is not under a mounted volume", name, keys)
	}
	want := []string{"CMD", binary, "probe", "http://127.0.0.1:" + port + "/readyz"}
	if !s.hasHealthcheck() || !slices.Equal(s.Healthcheck.Test, want) {
		var got []string
		if s.Healthcheck != nil {
			got = s.Healthcheck.Test
		}
		c.errorf("service %s: healthcheck test %q, want %q (the image has no shell)", name, got, want)
	}
}

func (c *checker) isService(name string) bool {
	_, ok := c.file.Services[name]
	return ok
}

// checkTopologyAgrees checks that every service sizes topics as the topics
// job creates them: roles check the topics at start and refuse another
// partition count or fewer replicas than they resolve themselves.
func (c *checker) checkTopologyAgrees(names []string) {
	def := topology.DefaultConfig()
	defaults := map[string]int{"partitions": int(def.Partitions), "replication": int(def.ReplicationFactor)}
	for _, flagName := range []string{"partitions", "replication"} {
		value := func(r *resolvedService) (int, bool) {
			if !r.set[flagName] {
				return defaults[flagName], true
			}
			n, err := strconv.Atoi(strings.TrimSpace(r.values[flagName]))
			return n, err == nil
		}
		var creator string
		var want int
		for _, name := range names {
			if r := c.resolved[name]; r != nil && r.cmd == "topics" {
				creator = name
				want, _ = value(r)
				break
			}
		}
		if creator == "" {
			continue
		}
		for _, name := range names {
			r := c.resolved[name]
			if r == nil || name == creator {
				continue
			}
			if _, ok := rolesFor(r.cmd); !ok {
				continue
			}
			if got, ok := value(r); ok && got != want {
				c.errorf("service %s: --%s resolves to %d, but service %s creates the topics with %d: roles refuse topics with another partition count or fewer replicas than they resolve", name, flagName, got, creator, want)
			}
		}
	}
}
