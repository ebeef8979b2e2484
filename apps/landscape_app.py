"""`streamlit run apps/landscape_app.py -- --results DIR` from a checkout; `landscape app` runs the same app."""

from landscape.app import main

main()
