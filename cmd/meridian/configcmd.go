package main

import (
	"fmt"
	"io"

	"github.com/meridianhq/meridian/internal/configfile"
)

const configUsage = `usage:
  meridian config check FILE...   validate configuration files; every problem is printed as FILE:LINE: field PATH: what is wrong
  meridian config reference       print every setting: YAML path, flag, type, default, live reload, secret's environment variable`

// configCommand runs the `meridian config` subcommands.
func configCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, configUsage)
		return 2
	}
	switch args[0] {
	case "check":
		if len(args) < 2 {
			fmt.Fprintln(stderr, configUsage)
			return 2
		}
		return checkConfigs(args[1:], stdout, stderr)
	case "reference":
		fmt.Fprint(stdout, reference())
		return 0
	}
	fmt.Fprintln(stderr, configUsage)
	return 2
}

// checkConfigs validates each file the way `promtool check config` does: all of them,
// every problem of each, and a non-zero exit when any has one.
func checkConfigs(files []string, stdout, stderr io.Writer) int {
	failed := 0
	for _, f := range files {
		_, err := parseConfig([]string{"-config.file", f}, io.Discard)
		if err == nil {
			fmt.Fprintf(stdout, "%s: OK\n", f)
			continue
		}
		failed++
		errs := configfile.Split(err)
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		fmt.Fprintf(stdout, "%s: FAILED, %d problem(s)\n", f, len(errs))
	}
	if failed > 0 {
		return 1
	}
	return 0
}
