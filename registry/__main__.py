from registry.service import main
from runtime.lifecycle import run

run(main)
