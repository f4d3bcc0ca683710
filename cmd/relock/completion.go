package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/posener/complete"
	"github.com/willabides/kongplete"
)

// completionCmd is `relock completion bash|zsh|fish`. The script it prints
// makes the shell call relock itself with COMP_LINE set; kongplete (in main)
// answers from the command line model, so completions never go stale.
type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"Shell to print the script for: bash, zsh or fish."`
}

// Help is shown by `relock completion --help`.
func (c *completionCmd) Help() string {
	return `Load completions in the current shell:

  bash:  source <(relock completion bash)
  zsh:   source <(relock completion zsh)
  fish:  relock completion fish | source

or add that line to ~/.bashrc, ~/.zshrc or ~/.config/fish/config.fish.
The script calls this relock binary by its absolute path.`
}

// Run prints the script for c.Shell.
func (c *completionCmd) Run() error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("completion: %w", err)
	}
	if abs, err := filepath.EvalSymlinks(bin); err == nil {
		bin = abs
	}
	_, err = fmt.Print(completionScript(c.Shell, bin))
	return err
}

// completionScript is what posener/complete's installer would write to the
// shell's rc file, for `relock` answered by bin.
func completionScript(shell, bin string) string {
	q := "'" + strings.ReplaceAll(bin, "'", `'\''`) + "'"
	switch shell {
	case "bash":
		return "complete -o default -C " + q + " relock\n"
	case "zsh":
		return "autoload -U +X bashcompinit && bashcompinit\ncomplete -o nospace -C " + q + " relock\n"
	default: // fish
		return `function __complete_relock
    set -lx COMP_LINE (commandline -cp)
    test -z (commandline -ct)
    and set COMP_LINE "$COMP_LINE "
    ` + q + `
end
complete -f -c relock -a "(__complete_relock)"
`
	}
}

// completionOptions name the predictors flags refer to (predictor:"file").
func completionOptions() []kongplete.Option {
	return []kongplete.Option{kongplete.WithPredictor("file", complete.PredictFiles("*"))}
}

// completeCommandLine answers a shell's completion request (COMP_LINE in
// the environment) and exits; it returns at once otherwise.
func completeCommandLine(p *kong.Kong) {
	kongplete.Complete(p, completionOptions()...)
}

// completionModel is what completeCommandLine completes from.
func completionModel(p *kong.Kong) (complete.Command, error) {
	return kongplete.Command(p, completionOptions()...)
}
