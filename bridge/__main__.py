from bridge.service import main
from runtime.lifecycle import run

run(main)
