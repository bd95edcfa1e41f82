from runtime.lifecycle import run
from saver.service import main

run(main)
