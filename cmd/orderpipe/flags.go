package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

// envName is the environment variable of a flag: --postgres-url is
// ORDERPIPE_POSTGRES_URL.
func envName(flagName string) string {
	return "ORDERPIPE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// aliases are other environment variables accepted for a flag, after the
// ORDERPIPE_ one.
var aliases = map[string][]string{"postgres-url": {"DATABASE_URL"}}

// parse parses args into fs, then fills every flag not given on the command
// line from its environment variable. Command-line flags win over the
// environment, which wins over defaults.
func parse(fs *flag.FlagSet, args []string) error {
	fs.VisitAll(func(f *flag.Flag) {
		f.Usage = fmt.Sprintf("%s (env %s)", f.Usage, envName(f.Name))
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		for _, name := range append([]string{envName(f.Name)}, aliases[f.Name]...) {
			if v, ok := os.LookupEnv(name); ok && v != "" {
				if e := fs.Set(f.Name, v); e != nil {
					err = fmt.Errorf("environment %s=%q: %w", name, v, e)
				}
				return
			}
		}
	})
	return err
}

// listFlag is a comma-separated list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	*l = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// durationFlag registers a duration flag (kept for symmetry with the others).
func durationFlag(fs *flag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	fs.DurationVar(p, name, def, usage)
}
